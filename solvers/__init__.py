"""Solvers, installed as jacopt.solvers."""
from jacopt.solvers.bfgs import BFGS  # noqa: E402,F401
from jacopt.solvers.dogleg import Dogleg  # noqa: E402,F401
from jacopt.solvers.gauss_newton import GaussNewton  # noqa: E402,F401
from jacopt.solvers.lbfgs import LBFGS  # noqa: E402,F401
from jacopt.solvers.lbfgsb import LBFGSB  # noqa: E402,F401
from jacopt.solvers.levenberg_marquardt import LevenbergMarquardt  # noqa: E402,F401
from jacopt.solvers.matrix_free import MatrixFreeLevenbergMarquardt  # noqa: E402,F401
from jacopt.solvers.newton import Newton, NewtonCG  # noqa: E402,F401
from jacopt.solvers.sparse_lm import SparseLevenbergMarquardt  # noqa: E402,F401
