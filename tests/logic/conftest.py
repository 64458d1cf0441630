"""Fixtures of the logical-model tests: shared data, the T-cell model, AnnData.

Real data come from ``../shared`` next to the repository (override with
``CARTWIN_SHARED``); tests that need it skip with the path they looked at.
The engine tests need the optional packages cmaboss, mpbn and anndata; they
skip with that reason when a package is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest


def shared_dir() -> Path:
    """``../shared`` next to the repository, or ``$CARTWIN_SHARED``."""
    env = os.environ.get("CARTWIN_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def maboss_dir() -> Path:
    """Folder of the real MaBoSS models (see its PROVENANCE.md)."""
    folder = shared_dir() / "data" / "real" / "boolean" / "maboss"
    if not (folder / "cellfate.bnd").is_file():
        pytest.skip(f"real MaBoSS models not found at {folder}; set CARTWIN_SHARED")
    return folder


@pytest.fixture(scope="session")
def pbmc():
    """scanpy's PBMC 68k reduced data set (700 cells x 765 genes)."""
    pytest.importorskip("anndata", reason="anndata is needed for single-cell input")
    path = shared_dir() / "data" / "real" / "singlecell" / "10x_pbmc68k_reduced.h5ad"
    if not path.is_file():
        pytest.skip(f"PBMC h5ad not found at {path}; set CARTWIN_SHARED")
    from cartwin.logic import read_h5ad

    return read_h5ad(path)


@pytest.fixture(scope="session")
def pbmc_path() -> Path:
    """Path of the PBMC h5ad file."""
    path = shared_dir() / "data" / "real" / "singlecell" / "10x_pbmc68k_reduced.h5ad"
    if not path.is_file():
        pytest.skip(f"PBMC h5ad not found at {path}; set CARTWIN_SHARED")
    return path


@pytest.fixture(scope="session")
def tcell():
    """The shipped T-cell fate model."""
    from cartwin.logic import load_tcell_model

    return load_tcell_model()


@pytest.fixture()
def make_cells() -> Callable[..., object]:
    """Build a small AnnData from a cells x genes array and gene names."""
    ad = pytest.importorskip(
        "anndata", reason="anndata is needed for single-cell input"
    )
    import pandas as pd

    def build(values: np.ndarray, genes: Sequence[str], **obs: Sequence[str]):
        values = np.asarray(values, dtype=float)
        index = [f"cell{i}" for i in range(values.shape[0])]
        frame = pd.DataFrame({k: list(v) for k, v in obs.items()}, index=index)
        return ad.AnnData(X=values, var=pd.DataFrame(index=list(genes)), obs=frame)

    return build
