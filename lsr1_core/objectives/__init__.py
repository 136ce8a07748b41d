"""Batched objectives: value, gradient, Hessian, Newton direction and minimiser."""
from .base import Objective, check_batch, check_finite, solve_or_lstsq
from .functions import (TEACHING_FUNCTIONS, Beale, Himmelblau, Rastrigin, Rastrigin2D, Rosenbrock, Rosenbrock2D,
                        RotatedQuadratic2D, SixHumpCamel, teaching_function)
from .quadratic import (DiagonalQuadratic, Quadratic, QuadraticSampler, diagonal_quadratic, quadratic_split,
                        random_quadratics)
from .suites import PROFILE_DIMS, PROFILE_FAMILIES, Problem, family_objective, family_starts, profile_suite

__all__ = [
    "Objective", "check_batch", "check_finite", "solve_or_lstsq", "Quadratic", "DiagonalQuadratic",
    "QuadraticSampler", "diagonal_quadratic", "quadratic_split", "random_quadratics", "Rosenbrock", "Rastrigin",
    "Rosenbrock2D", "Rastrigin2D", "RotatedQuadratic2D", "Himmelblau", "Beale", "SixHumpCamel",
    "TEACHING_FUNCTIONS", "teaching_function", "Problem", "profile_suite", "family_objective", "family_starts",
    "PROFILE_DIMS", "PROFILE_FAMILIES",
]
