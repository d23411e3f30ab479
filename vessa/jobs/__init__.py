"""Training/inference jobs: the job spec, the JSON-lines progress protocol, cancel and status.

Nothing here imports torch or Slicer, so the Slicer module can parse progress and status
with the same code the trainer writes them with.
"""

from vessa.jobs.cancel import EXIT_CANCELLED, CancelFlag
from vessa.jobs.progress import EVENTS, ProgressWriter, parse_progress_line
from vessa.jobs.spec import STAGE1_EXPORT, JobSpec
from vessa.jobs.status import StatusFile, read_status

__all__ = [
    "EVENTS",
    "EXIT_CANCELLED",
    "STAGE1_EXPORT",
    "CancelFlag",
    "JobSpec",
    "ProgressWriter",
    "StatusFile",
    "parse_progress_line",
    "read_status",
]
