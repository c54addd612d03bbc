"""Orchestration: runs analyses, gathers them for the page, writes result files, sweeps models.

It sits above computing (scan, qk) and rendering, and below the command line.
"""

from ..render.page import Report
from .outputs import ResultDir, ResultFile
from .report_builder import build_report
from .sweep import SweepEntry, SweepResult, plan_sweep, run_sweep

__all__ = ["Report", "ResultDir", "ResultFile", "SweepEntry", "SweepResult", "build_report", "plan_sweep", "run_sweep"]
