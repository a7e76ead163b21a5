from hyperv_exporter.guest.cli import main

raise SystemExit(main())
