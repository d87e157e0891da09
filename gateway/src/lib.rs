//! HTTPS front door: the C2SP tlog-witness API, the monitoring endpoint and the
//! aggregated `/metrics`. Built in its own issue; until then intentionally empty.
