"""Fronts of the RL wing: evaluation of a policy on every objective, the preference sweep (a
library over the services), the front's points at matched KL, and Rewarded Soups."""
