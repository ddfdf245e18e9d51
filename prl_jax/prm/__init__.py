"""Every trained step scorer: the ER-PRM model and its training, Monte Carlo labels, step scoring and
the frozen PRM that scores rollouts for `method=erprm`."""
