"""Kedro datasets for what kedro-datasets lacks. IO only: no model code here."""

from tpir_kedro.datasets.anndata_dataset import AnnDataDataset
from tpir_kedro.datasets.cell_table_dataset import CellTableDataset
from tpir_kedro.datasets.cohort_source_dataset import (
    Her2stDirectoryDataset,
    HestDirectoryDataset,
    VisiumDirectoryDataset,
)
from tpir_kedro.datasets.folder_dataset import FolderDataset
from tpir_kedro.datasets.gene_encoders_dataset import GeneEncodersDataset
from tpir_kedro.datasets.her2st_section_slide_dataset import Her2stSectionSlideDataset
from tpir_kedro.datasets.image_models_dataset import ImageModelsDataset
from tpir_kedro.datasets.packaged_model_folders_dataset import PackagedModelFoldersDataset
from tpir_kedro.datasets.patch_store_dataset import PatchStoreDataset
from tpir_kedro.datasets.slide_dataset import SlideDataset

__all__ = [
    "AnnDataDataset",
    "CellTableDataset",
    "FolderDataset",
    "GeneEncodersDataset",
    "Her2stDirectoryDataset",
    "Her2stSectionSlideDataset",
    "HestDirectoryDataset",
    "ImageModelsDataset",
    "PackagedModelFoldersDataset",
    "PatchStoreDataset",
    "SlideDataset",
    "VisiumDirectoryDataset",
]
