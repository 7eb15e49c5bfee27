require defender-agent.inc
