"""What an experiment prints: our own log lines, and the libraries' only when asked.

`setup_logging()` (called first in every `experiments/*.py` main) shows rewardlab's
INFO lines (stage progress, one line per checkpoint, resume and stop messages) with a
short time stamp, and keeps absl / orbax / grain / jax at WARNING. absl's own
`--verbosity` flag brings their chatter back: `--verbosity=0` is INFO, `1` DEBUG.
"""

from __future__ import annotations

import logging

from absl import flags
from absl import logging as absl_logging

OUR_LOGGERS = ("rewardlab", "__main__", "experiments")
_FORMAT = "%(asctime)s %(name)s: %(message)s"


def library_verbosity() -> int | None:
  """The `--verbosity` the user gave on the command line, or None."""
  try:
    flag = flags.FLAGS["verbosity"]
  except KeyError:
    return None
  return flag.value if flag.present else None


def setup_logging(verbosity: int | None = None) -> None:
  """Our loggers at INFO on stderr; the libraries at WARNING unless `verbosity` (or the
  command line's `--verbosity`) is >= 0."""
  verbosity = library_verbosity() if verbosity is None else verbosity
  absl_logging.set_verbosity(absl_logging.WARNING if verbosity is None or verbosity < 0
                             else verbosity)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
  for name in OUR_LOGGERS:
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG if (verbosity or 0) >= 1 else logging.INFO)
    logger.handlers = [h for h in logger.handlers if not getattr(h, "_rewardlab", False)]
    handler._rewardlab = True  # pylint: disable=protected-access
    logger.addHandler(handler)
    logger.propagate = False
