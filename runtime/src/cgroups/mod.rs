//! Control groups: one interface, a v1 and a v2 backend chosen at run time, a freezer.
