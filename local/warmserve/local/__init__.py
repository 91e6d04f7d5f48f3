"""``warmserve local``: workers, gateway and scheduler on one machine, replaying a trace."""
