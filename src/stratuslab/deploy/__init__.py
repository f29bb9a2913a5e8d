"""The SlipStream layer: modules, runs, runtime parameters, the node agent."""
