"""ROS faces of the emulators (h1_sim, inspire_sim, camera_sim), sim_operator, the simulated trial runner
(sim_ab_trials) and the bench feed."""
