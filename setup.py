"""pivot_jax: cross-lingual instruction tuning of LLaMA-family models through a pivot language, in JAX."""

from setuptools import find_packages, setup

# Versions checked together on CPU (Python 3.11); the [tpu]/[gpu] extras swap in the accelerator jaxlib.
JAX = "jax>=0.10.2,<0.11"
TPU = "jax[tpu]>=0.10.2,<0.11"  # jax's own extra pins the libtpu its version was built with

setup(
    name="pivot_jax",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["pivot_jax", "pivot_jax.*"]),
    install_requires=[
        JAX,
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml-collections>=1.1,<2",
        "numpy>=2.0,<3",
        "sentencepiece>=0.2,<0.3",
        "tokenizers>=0.22,<0.24",
        "safetensors>=0.6,<0.9",
        "gguf>=0.17,<0.20",
        "jinja2>=3.1,<4",
        "seqio==0.0.20",
        "tensorflow==2.21.0",
        "tensorflow-text==2.21.1",
        "tensorflow-datasets>=4.9.10,<4.10",
        "tensorboard>=2.21,<2.22",  # its event-file writer and protos (TensorBoard logs)
        "google-cloud-storage>=3,<4",  # Orbax lists and deletes checkpoint steps on gs:// with it
        "absl-py>=2",
        "babel>=2.14",
        "sacrebleu>=2.6,<2.7",  # spBLEU's local-model hook relies on 2.6 internals (pivot_jax/eval/metrics.py)
        "py3langid>=0.4,<0.5",
        "matplotlib>=3.9,<4",  # report plots
        "scipy>=1.13,<2",  # scaling-law fits (bounded Huber least squares) and allocation (SLSQP, root finding)
        "submitit>=1.5.4,<1.6",  # SLURM jobs and arrays; launch --dry_run uses its private sbatch writer (1.5)
    ],
    extras_require={
        # Parity tests build reference models with PyTorch (CPU) + transformers; no weights are downloaded.
        # gs:// tests run on a local GCS emulator (tests/gcs_emulator.py) through gcsfs; gcsfs 2026.10.1 needs
        # fsspec>=2026.9.0 (no gcsfs 2026.9.x was released) and brings google-cloud-storage, which Orbax uses on gs://.
        # libtpu (jax[tpu]; a 213 MB wheel, 684 MB installed) compiles for TPU slices on a CPU host: tests/test_aot.py.
        "dev": ["pytest>=8", "hypothesis>=6.100", "torch==2.13.0", "transformers==5.23.0", "accelerate>=1.10",
                "gcp-storage-emulator==2026.7.19", "gcsfs==2026.10.1",
                "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",  # notebooks/ run in the tests
                TPU],
        "tpu": [TPU],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
    },
)
