"""Architecture search: controllers, action encoding and search strategies.

    strategy = make_strategy(StrategyConfig(name="ppo"), "wacv", seed=0)
    p = strategy.propose()          # p.genotype, p.action, p.log_prob
    strategy.observe(p, reward)     # any order, several proposals in flight
    torch.save(strategy.state_dict(), "search_state.pt")
"""
from .controllers import (Decision, LSTMController, action_length, action_ranges, action_to_genotype,
                          decisions, genotype_to_action, make_controller, random_action)
from .strategies import (STRATEGIES, EvolutionStrategy, PPOStrategy, Proposal, RandomStrategy,
                         ReinforceStrategy, SearchStrategy, StrategyConfig, make_strategy)

__all__ = [
    "Decision", "LSTMController", "action_length", "action_ranges",
    "action_to_genotype", "decisions", "genotype_to_action", "make_controller", "random_action",
    "STRATEGIES", "EvolutionStrategy", "PPOStrategy", "Proposal", "RandomStrategy",
    "ReinforceStrategy", "SearchStrategy", "StrategyConfig", "make_strategy",
]
