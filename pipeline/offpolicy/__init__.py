"""Off-policy evaluation: what each policy would earn, estimated from a log another policy wrote.

- ``target``: the evaluated policy's action probabilities (first item and top-k list) at the logged items;
- ``reward_model``: the cross-fitted ``r_hat`` of the DR-type estimators;
- ``estimators``: IPS, SNIPS, DR, SNDR, Switch-DR, one class each (``ESTIMATORS`` is the registry);
- ``intervals``: 95% intervals (a t-interval on the delta method's standard error joined with a gamma interval of
  the weighted clicks), standard errors and bootstrap draws, for every estimator alike;
- ``diagnostics``: overlap (matched events, effective sample size, largest weight, mean weight, effective clicks,
  unsupported choices) and the reliability flags;
- ``selection``: the decision's estimator when ``decision.estimator: auto`` (smallest estimated MSE);
- ``evaluate``: the rows a policy task writes, the logging policy's own row, and the summary against the truth;
- ``slate`` and ``slate_target``: logs with several slots per impression (SIPS, IIPS, RIPS, PI and the
  self-normalised versions), the policy's slot, prefix and slate probabilities.
"""

from pipeline.offpolicy.estimators import ESTIMATORS, LoggedFeedback
from pipeline.offpolicy.evaluate import (LOGGING, OBSERVED, OFF_POLICY_COLUMNS, LoggedTestEvents,
                                         logging_policy_estimates, policy_estimates, summarise_against_truth)
from pipeline.offpolicy.reward_model import CrossFittedRewardModel, RewardModel
from pipeline.offpolicy.slate import (OBSERVED_SLATE, SLATE_ESTIMATORS, LoggedSlates, logging_slate_estimate,
                                      observed_name, slate_estimates, unavailable_estimators)
from pipeline.offpolicy.slate_target import slate_target_terms
from pipeline.offpolicy.target import TargetTerms, target_terms

__all__ = ["ESTIMATORS", "LOGGING", "OBSERVED", "OBSERVED_SLATE", "SLATE_ESTIMATORS", "LoggedSlates",
           "logging_slate_estimate", "observed_name", "slate_estimates", "slate_target_terms", "unavailable_estimators", "OFF_POLICY_COLUMNS", "CrossFittedRewardModel", "LoggedFeedback",
           "LoggedTestEvents", "RewardModel", "TargetTerms", "logging_policy_estimates", "policy_estimates",
           "summarise_against_truth", "target_terms"]
