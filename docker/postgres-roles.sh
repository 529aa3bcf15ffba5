#!/bin/sh
# Two roles: akhbar_migrator owns the schema and runs migrations; akhbar_app (the workers and
# producers) may read and write rows but not change the schema.
set -eu
app_pw=$(cat /run/secrets/app_db_password)
mig_pw=$(cat /run/secrets/migrator_db_password)
psql -v ON_ERROR_STOP=1 --username postgres --dbname akhbar <<SQL
CREATE ROLE akhbar_migrator LOGIN PASSWORD '${mig_pw}';
CREATE ROLE akhbar_app LOGIN PASSWORD '${app_pw}';
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO akhbar_migrator;
GRANT USAGE ON SCHEMA public TO akhbar_app;
ALTER DEFAULT PRIVILEGES FOR ROLE akhbar_migrator IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO akhbar_app;
ALTER DEFAULT PRIVILEGES FOR ROLE akhbar_migrator IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO akhbar_app;
SQL
