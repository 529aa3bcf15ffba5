#!/bin/sh
# Build akhbar's URLs from Docker secret files, so passwords never sit in the environment of the
# compose file or in the image, then run the akhbar command.
set -eu
secret() { cat "/run/secrets/$1"; }
if [ -n "${AKHBAR_REDIS_HOST:-}" ] && [ -f /run/secrets/redis_password ]; then
  AKHBAR_REDIS_URL="redis://${AKHBAR_REDIS_USER:-akhbar}:$(secret redis_password)@${AKHBAR_REDIS_HOST}"
  export AKHBAR_REDIS_URL
fi
db_user="${AKHBAR_DB_USER:-akhbar_app}"
db_secret="${AKHBAR_DB_PASSWORD_SECRET:-app_db_password}"
if [ -n "${AKHBAR_DB_HOST:-}" ] && [ -f "/run/secrets/$db_secret" ]; then
  AKHBAR_DATABASE_URL="postgresql://${db_user}:$(secret "$db_secret")@${AKHBAR_DB_HOST}"
  export AKHBAR_DATABASE_URL
fi
exec akhbar "$@"
