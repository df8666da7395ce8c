"""Sequential recommendation (seed 003): the session shop as a Gymnasium environment, the agent adapter and
the session-level comparison.  Importing it registers ``BanditShop/Sessions-v0`` with Gymnasium."""

import gymnasium

ENV_ID = "BanditShop/Sessions-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="pipeline.sessions.environment:make_registered")
