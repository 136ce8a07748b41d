"""The explorer's custom Streamlit components: Python wrappers here, their HTML/JS in the top-level
``assets/components/`` folder (served with the plotly.js of the installed plotly package)."""
