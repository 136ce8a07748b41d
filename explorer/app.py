"""L-SR1 Explorer: the Streamlit router. Start with ``streamlit run explorer/app.py``."""
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="L-SR1 Explorer", layout="wide")

pages = [
    st.Page(str(HERE / "views" / "home.py"), title="Home", default=True),
    st.Page(str(HERE / "views" / "trajectories.py"), title="Trajectories", url_path="trajectories"),
    st.Page(str(HERE / "views" / "curvature.py"), title="Curvature & secant", url_path="curvature"),
    st.Page(str(HERE / "views" / "benchmarks.py"), title="Benchmarks", url_path="benchmarks"),
    st.Page(str(HERE / "views" / "training.py"), title="Meta-training", url_path="training"),
    st.Page(str(HERE / "views" / "hmr.py"), title="Human mesh recovery", url_path="hmr"),
]
st.navigation(pages).run()
