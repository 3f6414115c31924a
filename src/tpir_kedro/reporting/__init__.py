"""Figures and tables users look at (plotly), built from pipeline outputs."""
