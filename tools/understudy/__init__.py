"""Host side of Understudy: launcher, build, and (later) the register's tools."""
