"""tpir_kedro: spatial-transcriptomics-guided pathology image encoders, robust across patients."""

__version__ = "0.1.0"
