"""The workbench: recipe sweeps (``apc sweep``) and parameter search (``apc tune``) over simulated runs."""
