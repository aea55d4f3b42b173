"""An optional password for the actions that change the queue (launch, cancel, retry).

Reading never needs it. The password comes from the settings
(SEGBENCH_DASHBOARD_PASSWORD) or from Streamlit secrets (`dashboard_password`).
"""

from __future__ import annotations

import hmac
import logging
import time

import streamlit as st

from db.settings import get_settings

log = logging.getLogger(__name__)

STATE_KEY = "segbench_authorised"
FAILURES_KEY = "segbench_password_failures"
MAX_DELAY_S = 30.0
_FAILURES: dict[str, int] = {}  # wrong guesses in a row, per client address


def configured_password() -> str | None:
    secret = get_settings().dashboard_password
    if secret is not None and secret.get_secret_value():
        return secret.get_secret_value()
    try:
        value = st.secrets.get("dashboard_password")
    except Exception:  # no secrets file: Streamlit raises rather than returning None
        value = None
    return str(value) if value else None


def password_form() -> None:
    """The sidebar field that unlocks the actions; shown only when a password is set."""
    password = configured_password()
    if password is None:
        return
    if st.session_state.get(STATE_KEY):
        st.sidebar.success("Actions unlocked.", icon=":material/lock_open:")
        return
    typed = st.sidebar.text_input(
        "Password",
        type="password",
        key="segbench_password",
        help="Launching, cancelling and retrying runs need the dashboard password.",
    )
    if typed:
        client = _client()
        failures = max(_FAILURES.get(client, 0), st.session_state.get(FAILURES_KEY, 0))
        # Each wrong guess makes the next one wait longer, per client and per session.
        time.sleep(failure_delay(failures))
        if hmac.compare_digest(typed.encode(), password.encode()):
            _FAILURES.pop(client, None)
            st.session_state[FAILURES_KEY] = 0
            st.session_state[STATE_KEY] = True
            st.rerun()
        else:
            _FAILURES[client] = failures + 1
            st.session_state[FAILURES_KEY] = failures + 1
            log.warning("dashboard: wrong password from %s (%d in a row)", client, failures + 1)
            st.sidebar.error("Wrong password.")


def failure_delay(failures: int) -> float:
    """Seconds to wait before checking a guess after `failures` wrong ones in a row."""
    return 0.0 if failures <= 0 else min(MAX_DELAY_S, 0.5 * 2 ** (failures - 1))


def _client() -> str:
    try:
        return str(st.context.ip_address or "local")
    except Exception:  # older Streamlit, or no browser (AppTest)
        return "local"


def authorised() -> bool:
    """True when actions are allowed: no password is set, or it was entered."""
    return configured_password() is None or bool(st.session_state.get(STATE_KEY))


def locked_note() -> None:
    st.info("Enter the dashboard password in the sidebar to launch, cancel or retry runs.")
