from services.webhooks.dispatcher import main

raise SystemExit(main())
