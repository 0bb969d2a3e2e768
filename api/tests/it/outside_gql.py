"""Python `gql` fetches the schema the way its users do (fetch_schema_from_transport) and
graphql-core prints it next to the published one, for `introspection.rs`."""
import json
import re
import sys

from gql import Client
from gql.transport.requests import RequestsHTTPTransport
from graphql import build_schema, lexicographic_sort_schema, print_schema

url, schema_file = sys.argv[1:3]
client = Client(transport=RequestsHTTPTransport(url=url), fetch_schema_from_transport=True)
with client:
    pass
served = print_schema(lexicographic_sort_schema(client.schema))
with open(schema_file, encoding="utf-8") as f:
    published_schema = build_schema(f.read())
# Whether gql asked for the schema's own description and each scalar's @specifiedBy
# depends on its version: compare what it asked for (a description or a URL it got back).
if client.schema.description is None:
    published_schema.description = None
published = print_schema(lexicographic_sort_schema(published_schema))
if not any(getattr(t, "specified_by_url", None) for t in client.schema.type_map.values()):
    published = re.sub(r' @specifiedBy\(url: "[^"]*"\)', "", published)
a, b = served.splitlines(), published.splitlines()
first = next(
    ({"line": i, "served": a[i : i + 4], "published": b[i : i + 4]}
     for i, (x, y) in enumerate(zip(a, b)) if x != y),
    None,
)
print(json.dumps({"equal": served == published, "types": len(client.schema.type_map),
                  "first_difference": first}))
