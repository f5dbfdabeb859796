"""The kickout's rules on plain values: the request and result models, the plan of ZEGO calls, the errors, the
deadline, and the ports the rest of the function implements. No AWS, no Powertools, no HTTP."""
