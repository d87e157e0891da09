//! End-to-end tests against real Rekor instances and real peer witnesses.
//! Built in its own issue; until then intentionally empty.
