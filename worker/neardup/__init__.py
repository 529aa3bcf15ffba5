"""Near-duplicates and story versions: signatures, pairwise verdicts and the shared Redis index."""

from worker.neardup.compare import DEFAULT_THRESHOLDS, Thresholds, Verdict, compare, features, paragraph_diff
from worker.neardup.signature import Signature, signature

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Signature",
    "Thresholds",
    "Verdict",
    "compare",
    "features",
    "paragraph_diff",
    "signature",
]
