"""Analysis of traces: Newton alignment, secant residuals, spectra, performance profiles."""
from .curvature import cosine_to_newton, eigen_comparison, secant_residual, trace_newton_cosines, trace_secant_residuals
from .profiles import performance_measure, performance_profile, profile_auc

__all__ = ["cosine_to_newton", "secant_residual", "eigen_comparison", "trace_newton_cosines",
           "trace_secant_residuals", "performance_measure", "performance_profile", "profile_auc"]
