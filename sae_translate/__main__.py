from sae_translate.entry import main

main()
