"""The furnace family: what vacuum induction, annealing and other curve-following furnaces share."""
