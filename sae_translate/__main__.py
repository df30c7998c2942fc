from sae_translate.cli import main

main()
