"""Export: lower the scheduled module to a VM executable, link it and write the artifact folder."""
