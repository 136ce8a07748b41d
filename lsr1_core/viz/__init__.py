"""Figure builders and page computations for the explorer (pure functions; no streamlit here)."""
