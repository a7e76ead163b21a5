from hyperv_exporter.host.cli import main

raise SystemExit(main())
