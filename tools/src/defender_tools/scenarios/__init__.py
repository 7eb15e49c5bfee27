"""Attack scenarios run from the host against a booted guest.

`base` defines Check, ScenarioResult and Scenario; `checks` holds every check, written
once; each story is one module; `ssh_brute_force` has the SSH password attempts they use.
`defender-tools demo` and the QEMU tests run the same scenario objects.
"""

from defender_tools.scenarios.backlog_after_restart import BacklogAfterRestart
from defender_tools.scenarios.base import Check, Scenario, ScenarioResult
from defender_tools.scenarios.keys_then_login import KeysThenLogin
from defender_tools.scenarios.login_after_guessing import LoginAfterGuessing
from defender_tools.scenarios.password_guessing import PasswordGuessing
from defender_tools.scenarios.pubkey_only import PubkeyOnlyServer
from defender_tools.scenarios.slow_guessing import SlowGuessing
from defender_tools.scenarios.user_enumeration import UserEnumeration

__all__ = [
    "BacklogAfterRestart",
    "Check",
    "KeysThenLogin",
    "LoginAfterGuessing",
    "PasswordGuessing",
    "PubkeyOnlyServer",
    "Scenario",
    "ScenarioResult",
    "SlowGuessing",
    "UserEnumeration",
]
