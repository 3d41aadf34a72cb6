"""The engines: the round driver both call (`round`), the local engine (`local`) and its
worker pool (`pool`), and the callbacks they run after every round (`callbacks`)."""
