"""An optional password for the actions that change the queue (launch, cancel, retry).

Reading never needs it. The password comes from the settings
(SEGBENCH_DASHBOARD_PASSWORD) or from Streamlit secrets (`dashboard_password`).
"""

from __future__ import annotations

import hmac

import streamlit as st

from db.settings import get_settings

STATE_KEY = "segbench_authorised"


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
        if hmac.compare_digest(typed.encode(), password.encode()):
            st.session_state[STATE_KEY] = True
            st.rerun()
        else:
            st.sidebar.error("Wrong password.")


def authorised() -> bool:
    """True when actions are allowed: no password is set, or it was entered."""
    return configured_password() is None or bool(st.session_state.get(STATE_KEY))


def locked_note() -> None:
    st.info("Enter the dashboard password in the sidebar to launch, cancel or retry runs.")
