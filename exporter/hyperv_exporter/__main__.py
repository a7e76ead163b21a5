from hyperv_exporter.cli import main

raise SystemExit(main())
