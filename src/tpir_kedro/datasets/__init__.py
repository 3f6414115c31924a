"""Kedro datasets for what kedro-datasets lacks. IO only: no model code here."""

from tpir_kedro.datasets.anndata_dataset import AnnDataDataset
from tpir_kedro.datasets.cohort_source_dataset import Her2stDirectoryDataset, VisiumDirectoryDataset
from tpir_kedro.datasets.folder_dataset import FolderDataset
from tpir_kedro.datasets.gene_encoders_dataset import GeneEncodersDataset
from tpir_kedro.datasets.image_models_dataset import ImageModelsDataset
from tpir_kedro.datasets.patch_store_dataset import PatchStoreDataset

__all__ = [
    "AnnDataDataset",
    "FolderDataset",
    "GeneEncodersDataset",
    "Her2stDirectoryDataset",
    "ImageModelsDataset",
    "PatchStoreDataset",
    "VisiumDirectoryDataset",
]
