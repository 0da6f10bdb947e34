using Doorbell.Vmsa;

namespace Doorbell.Tests.Vmsa;

/// <summary>The permission an access needs, for all 16 combinations of its flags, against the rule written out.</summary>
public class RequiredPermissionTests
{
    [Fact]
    public void Every_access_flag_combination_needs_the_bit_the_rule_gives()
    {
        for (var a = 0; a < 16; a++)
        {
            var access = (AccessFlags)a;
            var privileged = (access & AccessFlags.Privileged) != 0;
            // Write wins over Execute wins over Read; a probe with none of them needs nothing.
            var expected = (access & AccessFlags.Write) != 0 ? (privileged ? PagePermissions.PrivWrite : PagePermissions.UserWrite)
                : (access & AccessFlags.Execute) != 0 ? (privileged ? PagePermissions.PrivExecute : PagePermissions.UserExecute)
                : (access & AccessFlags.Read) != 0 ? (privileged ? PagePermissions.PrivRead : PagePermissions.UserRead)
                : PagePermissions.None;
            Assert.True(expected == AccessPermissions.Required(access), $"access {access}: expected {expected}, got {AccessPermissions.Required(access)}");
        }
    }
}
