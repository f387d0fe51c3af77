"""ROS faces of the emulators (h1_sim, inspire_sim, camera_sim), sim_operator and the bench feed."""
