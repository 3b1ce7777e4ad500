"""How squashd is deployed: its image's build (`make image`: build_image, debian_base), and
the compose and Kubernetes files beside them. Not shipped in the wheel."""
