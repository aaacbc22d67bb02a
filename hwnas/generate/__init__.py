"""`hwnas generate`: from data and a latency budget to a checked ONNX model in one call.

The stages, one module each, in the order a run meets them:
- `pipeline`: `generate()` itself, the order of the stages and the choice of route;
- `caches`: the latency table and the trained supernet, reused when everything that decides them matches;
- `time_budget`: how a `--time-budget` is shared out (supernet, search, fine-tuning of the chosen subnet);
- `direct`: the route without a supernet, when the time budget cannot train one worth searching;
- `int8`: with `--int8`, the front's finalists scored quantised;
- `delivery`: candidates measured as deployed, exported and measured again until one keeps the budget;
- `report`: report.md; `results`: the `--json` result and what it lists.
"""

from hwnas.generate.caches import cached_supernet, cached_table, supernet_cache_key, table_cache_key
from hwnas.generate.delivery import (BUDGET_TOLERANCE, INT8_MAX_DROP, MAX_EXPORT_ATTEMPTS, SLOWER_PCT, Delivery,
                                     drift_sentence, next_candidate)
from hwnas.generate.int8 import INT8_FINALISTS, int8_finalists, score_finalists
from hwnas.generate.pipeline import DEFAULT_DATA, DEFAULT_SPACE, check_out_dir, generate, trust_table
from hwnas.generate.results import Attempt, GenerateResult
from hwnas.generate.time_budget import MIN_SUPERNET_EPOCHS, SEARCH_SHARE, TRAIN_SHARE

__all__ = [
    "BUDGET_TOLERANCE", "DEFAULT_DATA", "DEFAULT_SPACE", "INT8_FINALISTS", "INT8_MAX_DROP", "MAX_EXPORT_ATTEMPTS",
    "MIN_SUPERNET_EPOCHS", "SEARCH_SHARE", "SLOWER_PCT", "TRAIN_SHARE", "Attempt", "Delivery",
    "GenerateResult", "cached_supernet", "cached_table", "check_out_dir", "drift_sentence", "generate",
    "int8_finalists", "next_candidate", "score_finalists", "supernet_cache_key", "table_cache_key", "trust_table",
]
