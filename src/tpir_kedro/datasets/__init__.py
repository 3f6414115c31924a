"""Kedro datasets for what kedro-datasets lacks. IO only: no model code here."""

from tpir_kedro.datasets.anndata_dataset import AnnDataDataset
from tpir_kedro.datasets.cohort_source_dataset import Her2stDirectoryDataset, VisiumDirectoryDataset
from tpir_kedro.datasets.gene_encoders_dataset import GeneEncodersDataset
from tpir_kedro.datasets.patch_store_dataset import PatchStoreDataset

__all__ = ["AnnDataDataset", "GeneEncodersDataset", "Her2stDirectoryDataset", "PatchStoreDataset", "VisiumDirectoryDataset"]
