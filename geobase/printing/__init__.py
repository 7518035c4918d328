"""Thematic map sheets (专题制图): a declarative layout (:mod:`.layout`), the features a caller
may see (:mod:`.data`), matplotlib drawing styled from the layer specs (:mod:`.draw`, shared with
the WMTS picture tiles), the sheet's composition (:mod:`.sheet`) and the service (:mod:`.service`)."""
