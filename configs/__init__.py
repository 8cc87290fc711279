"""One OmegaConf YAML per registered variant: the single source of a variant's hyperparameters.

Top-level keys: `family`, `modality`, `description`, `model` (the family's config dataclass fields),
and optionally `upstream` (repo, filename(s), revision, sha256, container, the upstream config handed
to the converter, licence, paper, code URL) or `checkpoint` (our own weights).
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
