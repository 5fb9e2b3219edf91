# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # Azure Blob Storage options shared by every module of the collection that talks to a
    # storage account. Keep in step with azure_common_argument_spec() in module_utils/_azure.py:
    # do not add Azure connection options to individual modules - extend this fragment.
    DOCUMENTATION = r"""
options:
  auth_mode:
    description:
      - How to authenticate to the storage account. Chosen explicitly; never guessed from what
        happens to be set. Credentials of the other modes are ignored.
      - V(connection_string) uses O(connection_string) (endpoint and key or SAS in one string).
      - V(account_key) uses O(account_name) and O(account_key) (Shared Key).
      - V(sas) uses O(sas_token) with O(account_url) (or the default endpoint of O(account_name)).
      - V(entra) uses Microsoft Entra ID - a service principal when O(client_secret) is given,
        otherwise C(DefaultAzureCredential) of azure-identity (environment variables, workload identity,
        managed identity - O(client_id) selects a user-assigned one -, Azure CLI...). The identity
        needs C(Storage Blob Data Contributor) (upload, download, tiering) or C(Storage Blob Data Reader)
        (catalog, download).
      - Required unless a module says otherwise. Within a mode, an option given to the module wins
        over its environment variable.
    type: str
    choices: [connection_string, account_key, sas, entra]
  account_name:
    description:
      - Storage account name. Falls back to E(AZURE_STORAGE_ACCOUNT).
      - Without O(account_url), the endpoint is C(https://<account_name>.blob.core.windows.net).
    type: str
  account_url:
    description:
      - Blob service endpoint, for sovereign clouds (for example C(https://acct.blob.core.usgovcloudapi.net)),
        private endpoints or Azurite (C(http://127.0.0.1:10000/devstoreaccount1)). Falls back to
        E(AZURE_STORAGE_BLOB_ENDPOINT).
      - Never put a SAS token in it; use O(sas_token). Not used with O(auth_mode=connection_string),
        whose string carries the endpoint.
    type: str
  account_key:
    description: Storage account key for O(auth_mode=account_key). Falls back to E(AZURE_STORAGE_KEY).
    type: str
  sas_token:
    description:
      - Shared access signature for O(auth_mode=sas), with or without the leading C(?). Falls back to
        E(AZURE_STORAGE_SAS_TOKEN).
      - Needs permissions C(r), C(a), C(c), C(w), C(l) on the container (and C(t) for index tags); never shown
        in URLs the modules return.
    type: str
  connection_string:
    description: Connection string for O(auth_mode=connection_string). Falls back to E(AZURE_STORAGE_CONNECTION_STRING).
    type: str
  tenant_id:
    description: Entra tenant of the service principal (O(auth_mode=entra)). Falls back to E(AZURE_TENANT_ID).
    type: str
  client_id:
    description:
      - Application (client) id of the service principal, or of a user-assigned managed identity when
        O(client_secret) is not given (O(auth_mode=entra)). Falls back to E(AZURE_CLIENT_ID).
    type: str
  client_secret:
    description: Secret of the service principal (O(auth_mode=entra)). Falls back to E(AZURE_CLIENT_SECRET).
    type: str
  authority_host:
    description: Entra authority for sovereign clouds, for example C(login.microsoftonline.us).
    type: str
  container:
    description:
      - Blob container holding the backups. Falls back to E(AZURE_STORAGE_CONTAINER).
      - It is not created unless O(create_container=true).
    type: str
  prefix:
    description:
      - First part of every blob name; blobs are named
        C(<prefix>/<host>/<database>/<YYYY>/<MM>/<backup_id>.<ext>) with ext C(dump), C(globals.sql),
        C(manifest.json) (or C(dir/<file>) for a directory-format archive).
      - Letters, digits, C(_), C(-), C(.), C(=) and C(~) in segments separated by C(/); an empty string means no prefix.
      - A database name that is not plain (letters, digits, C(_), C(-), C(.)) is written with each byte outside
        C([A-Za-z0-9_]) as C(~XX), so C(my db) is C(my~20db).
    type: str
    default: timescaledb
  create_container:
    description: Create O(container) when it does not exist (else the module fails and says so).
    type: bool
    default: false
  max_retries:
    description: Retries of a failed request (connection errors, timeouts, HTTP 408/429/5xx) before the module fails.
    type: int
    default: 5
  retry_backoff:
    description: Seconds before the first retry; the wait grows exponentially (backoff + 2, + 4, + 8 ... seconds).
    type: int
    default: 4
  timeout:
    description: Connection and read timeout of one request, in seconds.
    type: int
    default: 60
requirements:
  - azure-storage-blob (12.x) and, for O(auth_mode=entra), azure-identity on the host running the module
notes:
  - Secrets (O(account_key), O(sas_token), O(connection_string), O(client_secret)) are never returned, logged
    or put in messages; returned URLs never carry a SAS token.
"""

    # How the modules that upload (blob_upload, chunk_archive) send a file: keep in step with
    # the block_size_mb and max_concurrency options of their argument specs.
    UPLOAD = r"""
options:
  block_size_mb:
    description:
      - Size of one uploaded block in MiB. Raised automatically when a file would need more than 50000 blocks.
    type: int
    default: 8
  max_concurrency:
    description: Blocks in flight at once.
    type: int
    default: 4
"""

    # The modules that talk to Azure Resource Manager (lifecycle_policy, container_protection):
    # keep in step with _lifecycle.arm_argument_spec().
    ARM = r"""
options:
  subscription_id:
    description: Subscription of the storage account (Resource Manager). Falls back to E(AZURE_SUBSCRIPTION_ID).
    type: str
  resource_group:
    description: Resource group of the storage account (Resource Manager).
    type: str
  arm_endpoint:
    description:
      - Azure Resource Manager endpoint, for sovereign clouds (for example C(https://management.usgovcloudapi.net)).
      - Plain C(http) is accepted for a loopback address only (the tests' ARM test double).
    type: str
    default: https://management.azure.com
  arm_access_token:
    description:
      - A bearer token for Azure Resource Manager obtained elsewhere (for example
        C(az account get-access-token --query accessToken -o tsv)), used instead of the O(auth_mode=entra) credential.
      - For Resource Manager, either this or O(auth_mode=entra) is needed - it accepts Entra tokens only.
    type: str
requirements:
  - azure-mgmt-storage for the Resource Manager calls
notes:
  - O(account_name) names the storage account for Resource Manager.
  - There is no emulator for Azure Resource Manager (Azurite serves the data plane only). The tests run the Resource
    Manager calls against a local HTTP test double (C(tests/integration/azure/arm_double.py)) that records the
    requests and checks their bodies against Azure's documented rules; a real account remains the final test.
"""

    # Replica targets (second copies, _replica.replicas_argument_spec()).
    REPLICAS = r"""
options:
  replicas:
    description:
      - Replica targets that hold a second copy of every backup set and history object of the primary target
        (the options above), each in another storage account, region or container, with its own credentials.
      - A replica has the primary's blob layout and O(prefix) - a blob has the same name in every target.
      - Copies are streamed through this host (read from the primary, hashed, staged, committed only when the
        sha256 is the manifest's); a replica that is down fails its own copies only.
      - Connection options of a replica are never read from the environment (C(AZURE_STORAGE_*) are the primary's).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The target's name in results, metrics and reports (a path segment, not V(primary)).
        type: str
        required: true
      auth_mode:
        description: As O(auth_mode), for this replica.
        type: str
        required: true
        choices: [connection_string, account_key, sas, entra]
      connection_string:
        description: As O(connection_string).
        type: str
      account_name:
        description: As O(account_name).
        type: str
      account_url:
        description: As O(account_url).
        type: str
      account_key:
        description: As O(account_key).
        type: str
      sas_token:
        description: As O(sas_token).
        type: str
      tenant_id:
        description: As O(tenant_id).
        type: str
      client_id:
        description: As O(client_id).
        type: str
      client_secret:
        description: As O(client_secret).
        type: str
      authority_host:
        description: As O(authority_host).
        type: str
      container:
        description: The replica's container.
        type: str
        required: true
      create_container:
        description: As O(create_container).
        type: bool
        default: false
      max_retries:
        description: As O(max_retries).
        type: int
        default: 5
      retry_backoff:
        description: As O(retry_backoff).
        type: int
        default: 4
      timeout:
        description: As O(timeout).
        type: int
        default: 60
      access_tier:
        description:
          - Access tier of the data blobs copied there (manifests keep the account's default). Unset, the account's
            default. V(Archive) is for lifecycle rules, not for copies.
        type: str
        choices: [Hot, Cool, Cold]
"""
