# nooelint: oelint.file.underscores
# No version in the file name: PV is read from the agent's one version file
# (agent/src/defender_agent/_version.py) in defender-agent.inc.
require defender-agent.inc
