"""The grid: params.yaml's suites (``suite``), their cells checked against the models
(``cells``), and sweeps over them (``sweep``) with a local (``local``) or Slurm (``slurm``)
launcher. Nothing here imports torch at import time."""
