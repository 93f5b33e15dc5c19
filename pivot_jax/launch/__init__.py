"""Where work runs: this machine, SLURM clusters (submitit), Cloud TPU VMs and pod slices (gcloud), GKE (xpk)."""
