"""The node agent: what runs on every node instance of a run, standard library only.

The server ships this package to nodes as one zipapp, ``stratus-agent.pyz`` (built by
``stratuslab.deploy.agent_bundle``), in which it is the top-level package ``stratus_agent``:
so its modules import one another only relatively, and nothing outside the standard library.
``docs/agent.md`` is its specification. The modules, in the order a request travels:

- ``protocol``: what server and agent agree on (states, limits, how a key is qualified);
- ``exits``: the tools' exit codes and ``ToolError``; ``logger``: the agent's lazy logger;
- ``config``: the node's configuration and where the agent keeps things;
- ``wire``: HTTP/1.1 by hand; ``client``: the run's resources, retries, refusals;
- ``options``: the tools' command lines; ``tools``: ss-get, ss-set and the rest;
- ``progress``: the state follower, the log shipper, the markers; ``steps``: recipe processes;
- ``loop``: the agent (``run``); ``install``: launchers, unit, start;
- ``__main__``: dispatch on the name called by or the first argument.
"""
