"""Streamlit dashboard over run directories (reads them only; never retrains)."""
